# shellcheck shell=bash
# How asr.sh / slu.sh launch their jobs, with Kaldi's launchers from utils/ (linked by setup.sh):
#   local   run.pl     jobs on this machine, logs in files
#   stdout  stdout.pl  jobs on this machine, logs also on the terminal
#   slurm   slurm.pl   Slurm (sbatch); settings in conf/slurm.conf if present
#   sge     queue.pl   SGE/Torque/PBS (qsub); settings in conf/queue.conf if present
# Choose with the cmd_backend environment variable, e.g. `cmd_backend=slurm ./run.sh`.

cmd_backend=${cmd_backend:-local}
case "${cmd_backend}" in
    local) job_launcher=run.pl ;;
    stdout) job_launcher=stdout.pl ;;
    slurm) job_launcher=slurm.pl ;;
    sge) job_launcher=queue.pl ;;
    *)
        echo "cmd.sh: unknown cmd_backend '${cmd_backend}'; use local, stdout, slurm or sge" >&2
        return 1
        ;;
esac
# Data preparation and statistics.
export train_cmd="${job_launcher}"
# Training; asr.sh / slu.sh add "--gpu N".
export cuda_cmd="${job_launcher}"
# Decoding.
export decode_cmd="${job_launcher}"
