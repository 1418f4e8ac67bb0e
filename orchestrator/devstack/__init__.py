"""The whole stack on one machine (simulator, API, workers, beat, Redis), for the demo and the
benchmark."""
