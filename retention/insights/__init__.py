"""Insights for people: RFM segments, grounded narratives and the offline assistant.

``rfm`` (the recency / frequency / monetary table at a cut-off) and ``segments`` (train-segments:
k-means on it, names from each segment's profile, value and churn per segment) are the data;
``facts`` turns the released models into fact sheets, ``checker`` rejects any number or name a
text adds to its fact sheet, ``narratives`` has the language model phrase fact sheets (with the
templated sentence as the fallback) and ``assistant`` answers business questions from the
release, its figures computed here and only phrased by a model.
"""
