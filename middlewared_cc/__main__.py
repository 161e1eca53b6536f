from middlewared_cc.daemon import main

raise SystemExit(main())
