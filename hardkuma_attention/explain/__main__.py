from ..cli import explain_main

raise SystemExit(explain_main())
