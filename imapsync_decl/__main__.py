from imapsync_decl.cli import main

raise SystemExit(main())
