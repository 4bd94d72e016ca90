"""Trained adapters at work: ask one (infer), bake one into its base (merge), show them side by side (demo).

    finlora infer sentiment_smollm2_cpu "Operating profit rose to EUR 13.1 mn."
"""
