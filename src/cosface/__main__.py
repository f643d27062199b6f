from cosface.cli import main

raise SystemExit(main())
