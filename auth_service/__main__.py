from auth_service.cli import main

raise SystemExit(main())
