"""The learning loop's offline half: retraining the ranker's head from the ``training-examples`` topic
and publishing the result as a new Triton model version behind a gate and a canary.

* ``examples``: read and dedupe the topic, write the JSONL the model environment reads (app env)
* ``train``: grouping, time split, IPS weights, the listwise head fine-tune, metrics, the gate (numpy)
* ``retrain``: cosines with the served int8 encoder, then ``train`` (model env, ``python -m``)
* ``publish``: version directories, loading into the running Triton, canary, ``retire`` (app env)
* ``registry``: ``ModelVersion`` records on ``model-versions`` (app env)
* ``command``: ``streamrec train --from-stream`` end to end
"""
