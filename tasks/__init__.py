"""The six stage tasks of the policy (§4–§11), one module per stage: detect, analyse, contain, restore, notify, review."""
