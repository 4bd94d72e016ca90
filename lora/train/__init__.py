"""One training launch, decided then done: the lock, the pre-flight, the child process, what it leaves behind.

    finlora train sentiment_smollm2_cpu --dry-run
"""
