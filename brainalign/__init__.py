"""brainalign: study a language model the way cognitive neuroscience studies a brain.

A study flows one way, and the package is laid out the way it flows::

    stimuli/ (story words + times) -> record/ (neuron time courses) -> timecourse/
    (word -> TR grid) -> patterns/ (atoms, subgroups, ICA networks) -> encoding/
    (himalaya ridge on fMRI from brain/) -> networks/ (map patterns onto functional
    brain networks) -> export/ + report/

``interventions/`` lesions or amplifies neurons and parameter regions and feeds back
into recording and encoding; ``pipeline`` and ``cli`` compose the stages from a config.
"""

__version__ = "0.1.0"
