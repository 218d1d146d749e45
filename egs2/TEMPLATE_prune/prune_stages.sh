#!/usr/bin/env bash
# Run ESPnet's asr.sh or slu.sh with the compact model exported between training and decoding.
# Called by the recipes' run.sh from the recipe directory.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

usage="Usage: $0 asr|slu [--stage N] [--stop_stage N] [--export auto|true|false] [options of asr.sh/slu.sh]

Stages up to 11 (data, statistics, training) run as in asr.sh / slu.sh. Before stage 12
(decoding), the checkpoint named by --inference_asr_model / --inference_slu_model (e.g.
valid.acc.ave.pth) is exported by 'python -m espnet_prune.bin.export --output_dir EXP_pruned'
to a standalone experiment directory EXP_pruned: config.yaml of the physically pruned model
(no reference to the pretrained SSL weights), the compact model under the same file name, and
a .json report of parameters and MACs before and after. Stages 12 and later (decoding,
scoring, and asr.sh's packing with --skip_packing false) run on EXP_pruned. After stage 13, local/results.sh runs
on the decoded experiment if the recipe has it (the SLU recipes add the intent accuracy to
its RESULTS.md).
  --export auto   export when the trained config (EXP/config.yaml) prunes (default): its frontend
                  (frontend_conf.pruning of frontend: pruned_ssl) or the whole model
                  (model_conf.pruning of model: pruned_espnet; then every pruned part is exported)
  --export true   always export (an error for a config without pruning)
  --export false  decode the checkpoint as trained (unpruned baseline, or the gated model)
A config with several sizes (frontend_conf.pruning.targets or model_conf.pruning.targets, or
separate targets per budget) is exported from EXP/latest.pth to
EXP_pruned/<size>/ (target0.80, ...), each decoded and scored as its own experiment, and
EXP_pruned/RESULTS.md gets one row per size and test set (with the whole model's ratios for a
model_conf.pruning run).
The experiment directory EXP is --asr_exp / --slu_exp if given, else EXPDIR/asr_TAG or
EXPDIR/slu_TAG with TAG from --asr_tag / --slu_tag or else named as asr.sh / slu.sh name it:
the config's file name without .yaml (train without a config), _FEATS_TYPE, _LANG (unless noinfo), _TOKEN_TYPE (and
NBPE for bpe), the --asr_args / --slu_args with '--', spaces, '|', '=' and '/' removed, and
_sp with speed perturbation; so runs that differ only in their args get their own directory.
EXP is passed on so that every stage uses the same directory. Every other option goes
to asr.sh / slu.sh unchanged; when an option is repeated, the last value counts."

log() {
    echo "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$0")) $*"
}
error() {
    echo "$(basename "$0"): Error: $*" >&2
    exit 1
}

if [ $# -lt 1 ]; then
    echo "${usage}" >&2
    exit 2
fi
case "$1" in
    asr | slu) task=$1 ;;
    -h | --help)
        echo "${usage}"
        exit 0
        ;;
    *) error "the first argument must be the task, asr or slu; got '$1'" ;;
esac
shift
task_script=./${task}.sh
if [ ! -e "${task_script}" ]; then
    error "${task_script} is missing in $(pwd): link ESPnet's recipe scripts first with
    ../../TEMPLATE_prune/setup.sh /path/to/espnet"
fi

stage=1
stop_stage=10000
export_model=auto
python=python3
expdir=exp
config=
tag=
exp=
inference_model=valid.acc.ave.pth
# What asr.sh / slu.sh name the experiment after (their defaults).
feats_type=raw
lang=noinfo
token_type=bpe
nbpe=30
hugging_face_model_name_or_path=
speed_perturb_factors=
train_args=
passed=()  # options for the task script, except those set per phase below
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            echo "${usage}"
            echo
            "${task_script}" --help
            exit 0
            ;;
        --*) ;;
        *) error "unexpected argument '$1'; options are given as '--name value'" ;;
    esac
    [ $# -ge 2 ] || error "option $1 needs a value"
    # Like Kaldi's parse_options.sh: --train-set and --train_set are the same option.
    name=${1#--}
    name=${name//-/_}
    value=$2
    shift 2
    case "${name}" in
        stage) stage=${value}; continue ;;
        stop_stage) stop_stage=${value}; continue ;;
        export) export_model=${value}; continue ;;
        "${task}_exp") exp=${value}; continue ;;
        "inference_${task}_model") inference_model=${value}; continue ;;
        python) python=${value} ;;
        expdir) expdir=${value} ;;
        "${task}_config") config=${value} ;;
        "${task}_tag") tag=${value} ;;
        "${task}_args") train_args=${value} ;;
        feats_type) feats_type=${value} ;;
        lang) lang=${value} ;;
        token_type) token_type=${value} ;;
        nbpe) nbpe=${value} ;;
        hugging_face_model_name_or_path) hugging_face_model_name_or_path=${value} ;;
        speed_perturb_factors) speed_perturb_factors=${value} ;;
    esac
    passed+=("--${name}" "${value}")
done

[[ "${stage}" =~ ^[0-9]+$ ]] || error "--stage must be a stage number, got '${stage}'"
[[ "${stop_stage}" =~ ^[0-9]+$ ]] || error "--stop_stage must be a stage number, got '${stop_stage}'"
case "${export_model}" in
    auto | true | false) ;;
    *) error "--export must be auto, true or false, got '${export_model}'" ;;
esac
if [ -z "${exp}" ]; then
    if [ -z "${tag}" ]; then
        # The same tag as asr.sh / slu.sh would make (their "Set tag for naming of model directory";
        # test_real_espnet.py compares the two).
        if [ -n "${config}" ]; then
            tag=$(basename "${config}" .yaml)_${feats_type}
        else
            tag=train_${feats_type}
        fi
        [ "${lang}" = noinfo ] || tag+=_${lang}
        tag+=_${token_type}
        [ "${token_type}" != bpe ] || tag+="${nbpe}"
        # (slu.sh has no hugging_face token type and adds nothing for it.)
        [ "${task}" != asr ] || [ "${token_type}" != hugging_face ] || tag+=_${hugging_face_model_name_or_path/\//-}
        [ -z "${train_args}" ] || tag+=$(echo "${train_args}" | sed -e "s/--/\_/g" -e "s/[ |=/]//g")
        [ -z "${speed_perturb_factors}" ] || tag+=_sp
    fi
    exp=${expdir}/${task}_${tag}
fi

# shellcheck source=path.sh
. ./path.sh
interpreter=${python%% *}
if ! "${interpreter}" -c "import espnet_prune" 2>/dev/null; then
    error "'${interpreter}' cannot import espnet_prune: install it (pip install /path/to/espnet_prune)
    into the Python environment that path.sh activates"
fi

run_task() {  # run_task FIRST_STAGE LAST_STAGE INFERENCE_MODEL [EXPERIMENT_DIR]
    "${task_script}" "${passed[@]}" "--${task}_exp" "${4:-${exp}}" "--inference_${task}_model" "$3" \
        --stage "$1" --stop_stage "$2"
}

if [ "${stage}" -le 11 ]; then
    last=$((stop_stage < 11 ? stop_stage : 11))
    log "Stages ${stage} to ${last} of ${task_script} (experiment: ${exp})"
    run_task "${stage}" "${last}" "${inference_model}"
fi
[ "${stop_stage}" -ge 12 ] || exit 0

# The sizes the trained config prunes to (espnet_prune.export.sizes, for frontend_conf.pruning and
# model_conf.pruning alike: none without pruning, one for a single target, several for targets).
train_config=${exp}/config.yaml
sizes=
if [ "${export_model}" != false ]; then
    [ -f "${train_config}" ] || error "${train_config} does not exist: train the model first (stage 11)"
    sizes=$("${interpreter}" - "${train_config}" <<'EOF'
import sys

from espnet_prune.export.sizes import size_names

print(" ".join(size_names(sys.argv[1])))
EOF
) || error "cannot read the pruning sizes of ${train_config}"
fi
if [ "${export_model}" = auto ]; then
    export_model=$([ -n "${sizes}" ] && echo true || echo false)
elif [ "${export_model}" = true ] && [ -z "${sizes}" ]; then
    error "--export true: ${train_config} does not prune (neither frontend_conf.pruning of a pruned_ssl
    frontend nor model_conf.pruning), so there is nothing to export; --export false decodes it as trained"
fi

# --- several sizes from one run (frontend_conf / model_conf.pruning.targets; issues 12, 24) ---
# Every size is exported from EXP/latest.pth (the last epoch: it holds the snapshot of every size
# but the last, and the last size at the end of training; an average of the n best epochs could
# mix epochs from before a size's hold) to EXP_pruned/<size>/ (target0.80, target0.60, ...),
# each its own experiment that stages 12 and later decode, score (and pack) with
# --inference_MODEL latest.pth; EXP_pruned/RESULTS.md then has one row per size and test set.
if [ "${export_model}" = true ] && [ "$(wc -w <<<"${sizes}")" -gt 1 ]; then
    sizes_exp=${exp}_pruned
    sizes_model=latest.pth
    if [ "${stage}" -le 12 ]; then
        [ -e "${exp}/${sizes_model}" ] ||
            error "${exp}/${sizes_model} does not exist: train the model first (stage 11)"
        log "Export of every size (${sizes}): ${exp}/${sizes_model} -> ${sizes_exp}/<size>/ (log: ${exp}/export.log)"
        # shellcheck disable=SC2086  # ${python} is a command line
        if ! ${python} -m espnet_prune.bin.export --train_config "${exp}/config.yaml" \
            --model_file "${exp}/${sizes_model}" --output_dir "${sizes_exp}" >"${exp}/export.log" 2>&1; then
            tail -n 20 "${exp}/export.log" >&2
            error "export failed; see ${exp}/export.log"
        fi
        grep "missed its target" "${exp}/export.log" >&2 || true
    fi
    for size in ${sizes}; do
        log "Stages $((stage > 12 ? stage : 12)) to ${stop_stage} of ${task_script} use ${sizes_exp}/${size}/${sizes_model}"
        run_task "$((stage > 12 ? stage : 12))" "${stop_stage}" "${sizes_model}" "${sizes_exp}/${size}"
        if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ] && [ -x local/results.sh ]; then
            log "local/results.sh ${sizes_exp}/${size}"
            local/results.sh "${sizes_exp}/${size}"
        fi
    done
    if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ]; then
        log "${sizes_exp}/RESULTS.md: every size"
        # shellcheck disable=SC2086  # ${python} is a command line
        ${python} -m espnet_prune.bin.size_results "${sizes_exp}"
    fi
    exit 0
fi
# --- end of several sizes ----------------------------------------------------------------

decode_exp=${exp}
if [ "${export_model}" = true ]; then
    decode_exp=${exp}_pruned
    if [ "${stage}" -le 12 ]; then
        [ -f "${exp}/${inference_model}" ] ||
            error "${exp}/${inference_model} does not exist: train the model first (stage 11)"
        log "Export: ${exp}/${inference_model} -> ${decode_exp}/ (log: ${exp}/export.log)"
        # shellcheck disable=SC2086  # ${python} is a command line, e.g. "python3 -m espnet_prune"
        if ! ${python} -m espnet_prune.bin.export --train_config "${exp}/config.yaml" \
            --model_file "${exp}/${inference_model}" --output_dir "${decode_exp}" \
            >"${exp}/export.log" 2>&1; then
            tail -n 20 "${exp}/export.log" >&2
            error "export failed; see ${exp}/export.log"
        fi
        # A budget that training did not reach (the export report's warnings) is repeated here.
        grep "missed its target" "${exp}/export.log" >&2 || true
    fi
fi
log "Stages $((stage > 12 ? stage : 12)) to ${stop_stage} of ${task_script} use ${decode_exp}/${inference_model}"
run_task "$((stage > 12 ? stage : 12))" "${stop_stage}" "${inference_model}" "${decode_exp}"

# Stage 13 rewrites RESULTS.md from sclite's scores; a recipe with scores of its own (SLU:
# intent accuracy) adds them there with local/results.sh.
if [ "${stage}" -le 13 ] && [ "${stop_stage}" -ge 13 ] && [ -x local/results.sh ]; then
    log "local/results.sh ${decode_exp}"
    local/results.sh "${decode_exp}"
fi
