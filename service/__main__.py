"""`python -m service --model DIR` == `squad-qa serve --model DIR`."""

from service.cli import serve_main

raise SystemExit(serve_main())
