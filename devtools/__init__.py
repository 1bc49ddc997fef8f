"""Development tools: the simulated tenant and the demo. Never shipped: not in the wheel, not
deployed (see `.funcignore`), and never imported by `monitors`."""
