#!/usr/bin/env bash
# The stages of the espeak_demo recipes (asr1/run.sh, slu1/run.sh call this from their
# directory): asr.sh / slu.sh through ../../TEMPLATE_prune/prune_stages.sh, with the SSL
# stand-in trained before the pruned system.
#
#     ../run_recipe.sh asr|slu [--stage N] [--stop_stage N] [--standin_config YAML]
#                      [--standin_args ARGS] [--export auto|true|false] [options of asr.sh/slu.sh]
#
# 1. Stages STAGE..9 (1: local/data.sh synthesises the corpus with eSpeak NG; 2-5 format, filter
#    and tokenise; ASR with --use_lm true: 6-8 the LM) with the training config.
# 2. The SSL stand-in, unless exp/<task>_ssl_standin/ssl_encoder.pth exists (no pretrained SSL
#    model can be downloaded): stages 10-11 with --standin_config (tag ssl_standin) and
#    --standin_args as --<task>_args, then python -m espnet_prune.bin.extract_ssl saves its
#    encoder there, the checkpoint the training config starts from. Delete
#    exp/<task>_ssl_standin to train it again.
# 3. Stages max(STAGE,10)..STOP_STAGE with the training config: training with HJ-Pruning, export
#    of the compact model, decoding and scoring of it (prune_stages.sh).
# Every other option goes to prune_stages.sh and asr.sh / slu.sh unchanged (the last value of
# a repeated option counts); --<task>_exp, --<task>_tag and --<task>_args apply to the pruned
# system only.
set -euo pipefail

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') (run.sh) $*"
}
error() {
    echo "run.sh: Error: $*" >&2
    exit 1
}

[ $# -ge 1 ] || error "the first argument must be the task, asr or slu"
task=$1
shift
case "${task}" in
    asr | slu) ;;
    *) error "the first argument must be the task, asr or slu; got '${task}'" ;;
esac
if [ ! -e "${task}.sh" ]; then
    echo "run.sh: ./${task}.sh is missing. Link ESPnet's recipe scripts into this directory first:" >&2
    echo "    ../../TEMPLATE_prune/setup.sh /path/to/espnet    (or set ESPNET_ROOT)" >&2
    exit 1
fi

stage=1
stop_stage=13
standin_config=conf/train_${task}_ssl_standin.yaml
standin_args=
expdir=exp
passed=()        # options for prune_stages.sh in every phase
system_options=() # options for the pruned system only
while [ $# -gt 0 ]; do
    [[ "$1" == --* ]] || error "unexpected argument '$1'; options are given as '--name value'"
    [ $# -ge 2 ] || error "option $1 needs a value"
    name=${1#--}
    name=${name//-/_}
    case "${name}" in
        stage) stage=$2 ;;
        stop_stage) stop_stage=$2 ;;
        standin_config) standin_config=$2 ;;
        standin_args) standin_args=$2 ;;
        "${task}_exp" | "${task}_tag" | "${task}_args") system_options+=("--${name}" "$2") ;;
        *)
            [ "${name}" != expdir ] || expdir=$2
            passed+=("--${name}" "$2")
            ;;
    esac
    shift 2
done
[[ "${stage}" =~ ^[0-9]+$ ]] || error "--stage must be a stage number, got '${stage}'"
[[ "${stop_stage}" =~ ^[0-9]+$ ]] || error "--stop_stage must be a stage number, got '${stop_stage}'"

prune_stages=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../TEMPLATE_prune/prune_stages.sh
standin_exp=${expdir}/${task}_ssl_standin
ssl_checkpoint=${standin_exp}/ssl_encoder.pth

if [ "${stage}" -le 9 ]; then
    last=$((stop_stage < 9 ? stop_stage : 9))
    log "Data (stages ${stage} to ${last})"
    "${prune_stages}" "${task}" --stage "${stage}" --stop_stage "${last}" "${passed[@]}" "${system_options[@]}"
fi
[ "${stop_stage}" -ge 10 ] || exit 0

if [ "${stage}" -le 11 ] && [ ! -f "${ssl_checkpoint}" ]; then
    log "SSL stand-in: stages 10 and 11 with ${standin_config} (${standin_exp})"
    "${prune_stages}" "${task}" --stage 10 --stop_stage 11 "${passed[@]}" --export false \
        "--${task}_config" "${standin_config}" "--${task}_exp" "${standin_exp}" "--${task}_args" "${standin_args}"
    # shellcheck disable=SC1091
    . ./path.sh
    python3 -m espnet_prune.bin.extract_ssl --exp_dir "${standin_exp}" --output "${ssl_checkpoint}"
fi
[ -f "${ssl_checkpoint}" ] || error "${ssl_checkpoint} does not exist: run stages 10 and 11 (the SSL stand-in) first"

log "Pruned system (stages $((stage > 10 ? stage : 10)) to ${stop_stage})"
"${prune_stages}" "${task}" --stage "$((stage > 10 ? stage : 10))" --stop_stage "${stop_stage}" \
    "${passed[@]}" "${system_options[@]}"
