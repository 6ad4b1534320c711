from mlpatterns.bench.peers.bench import main

raise SystemExit(main())
