"""Face detector backends behind one base class (see base.py)."""
