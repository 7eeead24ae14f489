"""Data sets for reinforcement fine-tuning on math: (question, answer) pairs and prompt templates.

(Module docstring to be completed by the data owner.)
"""

# ----- hub data sets, local files, prompt templates (owner: data+rewards) -----


# ----- built-in synthetic task (owner: tiny-model) -----
