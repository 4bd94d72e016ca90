"""A registry entry becomes an Axolotl recipe: the entry's schema, the defaults sets, hardware profiles, rendering.

    finlora render --check     # every committed recipe is what its entry renders
"""
