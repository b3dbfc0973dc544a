"""Every class of user mistake, pinned to the exact line a user sees; and regressions for
the holes tests/test_spec_fuzz.py found (each one used to escape as a stack trace)."""
import pytest

from symbuilder.errors import SpecError
from symbuilder.spec.load import loads_spec


def error_of(text, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        loads_spec(text, source="s.yaml", **kwargs)
    return str(info.value)


# --- regressions found by the fuzzer ------------------------------------------------------

def test_control_characters_in_the_text_are_located():
    # PyYAML's Reader raised its own ReaderError before the loader's try block.
    assert error_of("\x00") == \
        "s.yaml:1:1: not a YAML text file: it holds binary data (a NUL byte)"
    assert error_of("name: a\nb: x\x07y\n") == \
        "s.yaml:2:5: character U+0007 is not allowed in YAML text"


def test_deep_nesting_is_a_located_error_not_a_recursion_error():
    # The composer recursed per level (RecursionError without a line); aliases nested in
    # aliases got past it and crashed the location walk outside every try block.
    assert error_of("a: " + "[" * 3000 + "]" * 3000) == \
        "s.yaml:1:67: nested more than 64 levels deep"
    chain = "\n".join(f"a{i}: &a{i} " + "[" * 60 + (f"*a{i - 1}" if i else "1") + "]" * 60
                      for i in range(30))
    assert error_of(chain) == "s.yaml:29:14: nested more than 64 levels deep (through aliases)"


def test_non_utf8_bytes_are_located():
    with pytest.raises(SpecError) as info:
        loads_spec(b"name: a\nb: caf\xe9\n", source="s.yaml")
    assert str(info.value) == "s.yaml:2:7: not UTF-8 text (byte 14: 0xe9); save the file as UTF-8"
