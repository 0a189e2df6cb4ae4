"""The Hub's scheduled jobs: a leader-elected scheduler (``scheduler``),
its lease (``lease``), the job table (``registry``), the run history
(``history``) and the jobs themselves (``expiry``, ``standard``)."""
