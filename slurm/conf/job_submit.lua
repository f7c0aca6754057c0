-- job_submit.lua for the hpc-sft test cluster (copied next to slurm.conf by slurm/cluster.sh).
-- Partition "noreq" behaves like a site that forbids requeue: --requeue is cleared on every job, so
-- `scontrol requeue` is refused and preemption cancels the job instead of requeueing it.
function slurm_job_submit(job_desc, part_list, submit_uid)
    if job_desc.partition == "noreq" then
        job_desc.requeue = 0
    end
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    if job_rec ~= nil and job_rec.partition == "noreq" then
        job_desc.requeue = 0
    end
    return slurm.SUCCESS
end
