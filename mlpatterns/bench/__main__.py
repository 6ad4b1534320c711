from mlpatterns.bench.run import main

raise SystemExit(main())
