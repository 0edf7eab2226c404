from edgedetect.cli import main

raise SystemExit(main())
