"""streamserve's harness: the embedded stack, the demo world, the load generator, bench, chaos and
soak. It imports the product (``streamserve``); the product never imports it."""
