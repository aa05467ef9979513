import sys
from pathlib import Path

# make tests/dist_harness.py importable as `dist_harness` from any test folder
sys.path.insert(0, str(Path(__file__).parent))
