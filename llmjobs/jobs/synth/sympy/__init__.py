"""``synth.sympy``: exact problems from SymPy families (registry, families by curriculum area, the kind)."""
