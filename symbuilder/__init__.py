"""symbuilder: YAML spec -> MXNet symbol with a frozen-affine input BatchNorm -> Module training -> verified exports."""
__version__ = "0.1.0"
