from bocb.cli import main

raise SystemExit(main())
