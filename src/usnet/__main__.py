import sys

from .cli import main, without_implicit_folder

sys.path[:] = without_implicit_folder(sys.path)
sys.exit(main())
