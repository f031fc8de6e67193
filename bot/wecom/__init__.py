"""WeCom outbound transport: the API client, the outbox delivery worker, roster seeding, and a
fake WeCom API server for tests, ``simulate`` and the demo."""
