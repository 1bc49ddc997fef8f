from monitors.cli import main

raise SystemExit(main())
