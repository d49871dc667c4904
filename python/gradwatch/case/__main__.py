import sys

from gradwatch.case.train import main

sys.exit(main())
