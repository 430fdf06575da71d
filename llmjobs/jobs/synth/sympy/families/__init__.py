"""Built-in problem families, one module per curriculum area (中1 ... 数学IIIC)."""
