"""PBS Professional for submitit (entry point group ``submitit``) and for llmjobs' ``pbs`` backend.

``submitit.AutoExecutor(folder, cluster="pbs")`` finds ``PBSExecutor`` through the entry point; inside a job,
``submitit.JobEnvironment()`` finds ``PBSJobEnvironment``. The pieces, each usable alone:

- ``script``: the pure function that renders a qsub script (golden-tested);
- ``state``: qstat JSON parsing (tolerant of PBS's invalid JSON) and the state classification;
- ``commands``: qsub / qstat / qdel with retries, and the one-query-for-all-jobs poll;
- ``executor``: ``PBSExecutor``, ``PBSJob``, ``PBSInfoWatcher``;
- ``environment``: ``PBSJobEnvironment`` (job id, array index, node rank and hosts inside a job).
"""
