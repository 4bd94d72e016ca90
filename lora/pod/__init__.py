"""Many runs, or a rented machine: queues and sweeps trained one after another, and SkyPilot launches.

    finlora queue --match 'sentiment_*_cpu' --dry-run
"""
