from imapsync_decl.cli.main import main

raise SystemExit(main())
