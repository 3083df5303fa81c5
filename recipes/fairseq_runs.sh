#!/usr/bin/env bash
# What a second `train.sh` in the same SAVE_DIR does (sourced by recipes/snli/train.sh and
# recipes/multi30k/train.sh; runs nothing by itself).
#
#   fairseq_run_begin SAVE_DIR FAIRSEQ_TRAIN_ARGS...   before fairseq-train; returns 1: reuse, skip it
#   fairseq_run_end   SAVE_DIR SECONDS STATS FAIRSEQ_TRAIN_ARGS...   after fairseq-train succeeded
#   fairseq_user_dir  print the folder of the installed fairseq_plugins package (for --user-dir);
#                     not installed: an error line and status 2
#
# SAVE_DIR/train.settings: the fairseq-train arguments without the budget flags (--max-epoch,
# --max-update, --stop-time-hours) plus a checksum of the data directory's dictionaries;
# SAVE_DIR/train.done: the budget flags of the run that finished; SAVE_DIR/train.stats:
# seconds=<wall seconds of the finished invocations, summed> and the KEY=VALUE lines of STATS.
#
# A rerun with the same settings and budget reuses the finished model (fairseq-train is not
# started: resuming a finished run would train one more update when the budget is --max-update or
# --stop-time-hours); the same settings with another budget continue from checkpoint_last.pt
# (fairseq's resume); an interrupted run (no train.done) resumes; other settings stop with an error
# instead of mixing two runs in one folder.  FRESH=1 deletes the folder's checkpoints, log and
# markers first and trains from scratch.  The log is appended to (train.log keeps every invocation).

fairseq_user_dir() {
    # find_spec locates the package without importing it (importing it imports fairseq: seconds)
    python -c '
import importlib.util, sys
spec = importlib.util.find_spec("fairseq_plugins")
if spec is None or not spec.submodule_search_locations:
    sys.exit("error: the fairseq_plugins package is not installed: pip install -e \".[fairseq]\" (recipes/setup_env.sh)")
print(list(spec.submodule_search_locations)[0])' || return 2
}

_fairseq_budget_flag() {
    case "$1" in --max-epoch|--max-update|--stop-time-hours) return 0 ;; *) return 1 ;; esac
}

# _fairseq_split ARGS...: print the settings (skip=0) or the budget (skip=1) lines of ARGS.
_fairseq_split() {
    local want="$1" a skip=0 dirs=()
    shift
    for a in "$@"; do
        if [ "$skip" = 1 ]; then
            [ "$want" = budget ] && printf '%s\n' "$a"
            skip=0
        elif _fairseq_budget_flag "$a"; then
            [ "$want" = budget ] && printf '%s\n' "$a"
            skip=1
        else
            [ "$want" = settings ] && printf '%s\n' "$a"
            [ -d "$a" ] && dirs+=("$a")
        fi
    done
    if [ "$want" = settings ] && [ ${#dirs[@]} -gt 0 ]; then
        printf 'data-dictionaries %s\n' "$(cat /dev/null "${dirs[0]}"/dict.*.txt 2>/dev/null | sha256sum | cut -d' ' -f1)"
    fi
}

fairseq_run_begin() {
    local save="$1" want_settings want_budget
    shift
    if [ "${FRESH:-0}" = 1 ] && [ -d "$save" ]; then
        echo "[train] FRESH=1: removing the checkpoints, log and markers in $save" >&2
        rm -f "$save"/checkpoint*.pt "$save"/train.log "$save"/train.settings "$save"/train.done "$save"/train.stats
    fi
    mkdir -p "$save"
    want_settings="$(_fairseq_split settings "$@")"
    want_budget="$(_fairseq_split budget "$@")"
    if [ -f "$save/train.settings" ] && [ "$(cat "$save/train.settings")" != "$want_settings" ]; then
        echo "error: $save holds a run with other settings:" >&2
        diff <(cat "$save/train.settings") <(printf '%s\n' "$want_settings") | grep '^[<>]' | head -n 6 >&2 || true
        echo "error: FRESH=1 retrains it from scratch; or choose another folder (SAVE_DIR / the WORK variable)" >&2
        exit 2
    fi
    if [ -f "$save/train.done" ] && [ "$(cat "$save/train.done")" = "$want_budget" ]; then
        echo "[train] $save: finished with these settings: reusing it (FRESH=1 retrains from scratch)" >&2
        return 1
    fi
    [ -f "$save/checkpoint_last.pt" ] && echo "[train] $save: resuming from checkpoint_last.pt (FRESH=1 starts from scratch)" >&2
    rm -f "$save/train.done"
    printf '%s\n' "$want_settings" > "$save/train.settings"
    printf '=== train.sh %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" >> "$save/train.log"
    return 0
}

fairseq_run_end() {
    local save="$1" seconds="$2" stats="$3" before=0
    shift 3
    if [ -f "$save/train.stats" ]; then
        before="$(sed -n 's/^seconds=//p' "$save/train.stats")"
    fi
    { echo "seconds=$(( ${before:-0} + seconds ))"; [ -z "$stats" ] || printf '%s\n' "$stats"; } > "$save/train.stats.tmp"
    mv "$save/train.stats.tmp" "$save/train.stats"
    printf '%s\n' "$(_fairseq_split budget "$@")" > "$save/train.done"
}
