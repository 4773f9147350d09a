//! The fake Juju hook tools: small POSIX `sh` scripts written into one directory that the
//! simulator puts first on each hook's PATH.
//!
//! Owns the tools' command lines, output formats and permission errors (juju-charm.md §1.3). The
//! scripts never build JSON: they `cat` files the simulator keeps up to date under
//! `$MPSIM_STATE` (layout in `model.rs`), append one record per call to `$MPSIM_HOOK/calls`, and
//! append transactional requests (`relation-set`, `action-set`, `action-fail`, `open-port`,
//! `close-port`) to `$MPSIM_HOOK/tx`, which the simulator applies only when the hook exits 0.
//! `status-set` writes the unit's status file at once. Records are fields separated by 0x1f and
//! terminated by 0x1e (values containing those bytes are not supported).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Common prelude: logs the call and defines helpers. `$T` is the tool name.
const PRELUDE: &str = r#"S="$MPSIM_STATE"; H="$MPSIM_HOOK"; UF="$MPSIM_UNITF"
{ printf '%s' "$T"; [ $# = 0 ] || printf '\037%s' "$@"; printf '\036'; } >> "$H/calls"
die() { c=$1; shift; echo "ERROR $*" >&2; exit "$c"; }
# resolve_rid <value-or-empty>: sets rid (numeric) or dies like Juju.
resolve_rid() {
  r=${1:-$JUJU_RELATION_ID}
  [ -n "$r" ] || die 2 "no relation id specified"
  rid=${r##*:}
  [ -d "$S/u/$UF/rel/$rid" ] || die 2 "invalid value \"$r\" for option -r: relation not found"
}
"#;

fn tool(name: &str, body: &str) -> String {
    format!("#!/bin/sh\nT={name}\n{PRELUDE}{body}")
}

const RELATION_GET: &str = r#"fmt=smart; r=; app=; key=; unit=; n=0
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -r|--relation) shift; r=$1;;
    -r=*|--relation=*) r=${1#*=};;
    --app) app=1;;
    --) shift; for a in "$@"; do n=$((n+1)); [ $n = 1 ] && key=$a; [ $n = 2 ] && unit=$a; done; break;;
    -?*) die 2 "flag provided but not defined: $1";;
    *) n=$((n+1)); if [ $n = 1 ]; then key=$1; elif [ $n = 2 ]; then unit=$1; else die 2 "unrecognized args: [\"$1\"]"; fi;;
  esac
  shift
done
[ $n -le 2 ] || die 2 "unrecognized args"
resolve_rid "$r"
if [ -z "$unit" ]; then
  unit=$JUJU_REMOTE_UNIT
  if [ -z "$unit" ]; then
    [ -n "$JUJU_REMOTE_APP" ] || die 2 "no unit id specified"
    unit=$JUJU_REMOTE_APP; app=1
  fi
fi
if [ -n "$app" ]; then
  unit=${unit%%/*}
  if [ "$unit" = "${JUJU_UNIT_NAME%%/*}" ] && [ ! -e "$S/r/$rid/peer" ] && [ "$MPSIM_LEADER" != true ]; then
    die 1 "permission denied"
  fi
else
  case $unit in */*) ;; *) die 2 "expected unit name, got application name \"$unit\"";; esac
fi
case $unit in */*) f="${unit%/*}-${unit##*/}";; *) f=$unit;; esac
[ -f "$S/r/$rid/$f.json" ] || die 1 "cannot read settings for unit \"$unit\" in relation \"$rid\": unit \"$unit\": settings not found"
if [ -e "$H/w.$rid.$f" ]; then printf 'stale-read\037%s\036' "$rid/$f" >> "$H/calls"; fi
case $fmt in json) ext=json;; yaml|smart) ext=raw;; *) die 2 "invalid value \"$fmt\" for option --format";; esac
if [ -z "$key" ] || [ "$key" = - ]; then
  if [ $ext = json ]; then cat "$S/r/$rid/$f.json"; else cat "$S/r/$rid/$f.yaml"; fi
else
  case $key in */*|.|..) p=;; *) p="$S/r/$rid/$f/$key.$ext";; esac
  if [ -n "$p" ] && [ -f "$p" ]; then cat "$p"; [ $ext = raw ] && echo; elif [ $ext = json ]; then echo null; else echo; fi
fi
"#;

const RELATION_SET: &str = r#"r=; app=0; file=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) ;;
    --format) shift;;
    -r|--relation) shift; r=$1;;
    -r=*|--relation=*) r=${1#*=};;
    --app) app=1;;
    --file) shift; file=$1;;
    --file=*) file=${1#--file=};;
    --) shift; break;;
    -?*) die 2 "flag provided but not defined: $1";;
    *) break;;
  esac
  shift
done
for a in "$@"; do case $a in ?*=*) ;; *) die 2 "expected \"key=value\", got \"$a\"";; esac; done
resolve_rid "$r"
if [ $app = 1 ]; then
  [ "$MPSIM_LEADER" = true ] || die 1 "cannot write relation settings: unit \"$JUJU_UNIT_NAME\" is not the leader"
  f=${JUJU_UNIT_NAME%%/*}
else
  f=$UF
fi
in=
if [ "$file" = - ]; then in="in.$$"; cat > "$H/$in"
elif [ -n "$file" ]; then in="in.$$"; cp "$file" "$H/$in" || die 1 "cannot read $file"
fi
: > "$H/w.$rid.$f"
{ printf 'relation-set\037%s\037%s\037%s' "$rid" "$app" "$in"; [ $# = 0 ] || printf '\037%s' "$@"; printf '\036'; } >> "$H/tx"
"#;

const RELATION_LIST: &str = r#"fmt=smart; r=; app=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -r|--relation) shift; r=$1;;
    -r=*|--relation=*) r=${1#*=};;
    --app) app=1;;
    *) die 2 "unrecognized args: [\"$1\"]";;
  esac
  shift
done
resolve_rid "$r"
if [ -n "$app" ]; then
  if [ "$fmt" = json ]; then cat "$S/r/$rid/remote-app.json"; else cat "$S/r/$rid/remote-app.raw"; echo; fi
elif [ "$fmt" = json ]; then cat "$S/u/$UF/rel/$rid/list.json"
else cat "$S/u/$UF/rel/$rid/list.raw"
fi
"#;

const RELATION_IDS: &str = r#"fmt=smart; ep=$JUJU_RELATION
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -?*) die 2 "flag provided but not defined: $1";;
    *) ep=$1;;
  esac
  shift
done
[ -n "$ep" ] || die 2 "no endpoint name specified"
p="$S/u/$UF/ids/$ep"
if [ "$fmt" = json ]; then if [ -f "$p.json" ]; then cat "$p.json"; else echo '[]'; fi
elif [ -f "$p.raw" ]; then cat "$p.raw"
fi
"#;

const IS_LEADER: &str = r#"fmt=smart
case "$*" in *json*) fmt=json;; esac
if [ "$fmt" = json ]; then
  if [ "$MPSIM_LEADER" = true ]; then echo true; else echo false; fi
elif [ "$MPSIM_LEADER" = true ]; then echo True; else echo False; fi
"#;

const CONFIG_GET: &str = r#"fmt=smart; key=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -a|--all) ;;
    -?*) die 2 "flag provided but not defined: $1";;
    *) key=$1;;
  esac
  shift
done
ext=raw; [ "$fmt" = json ] && ext=json
if [ -z "$key" ]; then
  if [ $ext = json ]; then cat "$S/config/all.json"; else cat "$S/config/all.yaml"; fi
elif [ -f "$S/config/k/$key.$ext" ]; then cat "$S/config/k/$key.$ext"; [ $ext = raw ] && echo
elif [ $ext = json ]; then echo null
else echo
fi
"#;

const STATUS_SET: &str = r#"target=$UF
case $1 in --application) [ "$MPSIM_LEADER" = true ] || die 1 "this unit is not the leader"; target=app; shift;; esac
case $1 in maintenance|blocked|waiting|active) ;; *) die 2 "invalid status \"$1\", expected one of [maintenance blocked waiting active]";; esac
printf '%s\n%s' "$1" "$2" > "$S/u/$target.status"
"#;

const JUJU_LOG: &str = r#"while [ $# -gt 0 ]; do
  case $1 in
    -l|--log-level) shift;;
    --log-level=*|--debug) ;;
    --) break;;
    *) break;;
  esac
  shift
done
[ $# -gt 0 ] || die 2 "no message specified"
"#;

const PORT: &str = r#"ep=
case $1 in --endpoints) ep=$2; shift 2;; --endpoints=*) ep=${1#*=}; shift;; esac
[ $# = 1 ] || die 2 "expected exactly one port or range"
case $1 in
  icmp|[0-9]*/tcp|[0-9]*/udp|[0-9]*) ;;
  *) die 2 "invalid port \"$1\"";;
esac
printf '%s\037%s\037%s\036' "$T" "$1" "$ep" >> "$H/tx"
"#;

const GOAL_STATE: &str = r#"case "$*" in *json*) cat "$S/goal-state.json";; *) cat "$S/goal-state.yaml";; esac
"#;

const ACTION_GET: &str = r#"fmt=smart; key=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -?*) die 2 "flag provided but not defined: $1";;
    *) key=$1;;
  esac
  shift
done
[ -n "$JUJU_ACTION_NAME" ] || die 1 "not running an action"
A="$S/u/$UF/action"
ext=raw; [ "$fmt" = json ] && ext=json
if [ -z "$key" ]; then if [ $ext = json ]; then cat "$A/all.json"; else cat "$A/all.yaml"; fi
elif [ -f "$A/k/$key.$ext" ]; then cat "$A/k/$key.$ext"; [ $ext = raw ] && echo
elif [ $ext = json ]; then echo null
else echo
fi
"#;

const ACTION_SET: &str = r#"[ -n "$JUJU_ACTION_NAME" ] || die 1 "not running an action"
for a in "$@"; do case $a in ?*=*) ;; *) die 2 "argument \"$a\" must be of the form key=value";; esac; done
{ printf 'action-set'; [ $# = 0 ] || printf '\037%s' "$@"; printf '\036'; } >> "$H/tx"
"#;

const ACTION_FAIL: &str = r#"[ -n "$JUJU_ACTION_NAME" ] || die 1 "not running an action"
printf 'action-fail\037%s\036' "$*" >> "$H/tx"
"#;

const NETWORK_GET: &str = r#"fmt=smart; b=; fl=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    -r|--relation) shift;;
    -r=*|--relation=*) ;;
    --bind-address|--primary-address) fl="${fl}b";;
    --egress-subnets) fl="${fl}e";;
    --ingress-address) fl="${fl}i";;
    -?*) die 2 "flag provided but not defined: $1";;
    *) [ -z "$b" ] || die 2 "unrecognized args: [\"$1\"]"; b=$1;;
  esac
  shift
done
[ -n "$b" ] || die 2 "no arguments specified"
[ -e "$S/bindings/$b" ] || die 1 "no network config found for binding \"$b\""
case $fl in *b*) x=b;; *) x=;; esac
case $fl in *e*) x=${x}e;; esac
case $fl in *i*) x=${x}i;; esac
[ -n "$x" ] || x=full
ext=yaml; [ "$fmt" = json ] && ext=json
case $x in b|e|i) [ $ext = yaml ] && ext=raw;; esac
cat "$S/u/$UF/net/$x.$ext"
"#;

const UNIT_GET: &str = r#"fmt=smart; key=
while [ $# -gt 0 ]; do
  case $1 in
    --format=*) fmt=${1#--format=};;
    --format) shift; fmt=$1;;
    private-address|public-address) key=$1;;
    *) die 2 "unknown setting \"$1\"";;
  esac
  shift
done
[ -n "$key" ] || die 2 "no setting specified"
if [ "$fmt" = json ]; then cat "$S/u/$UF/net/b.json"; else cat "$S/u/$UF/net/b.raw"; fi
"#;

const SYSTEMCTL: &str = r#"for a in "$@"; do
  case $a in
    is-active) echo active; exit 0;;
    is-enabled) echo enabled; exit 0;;
    is-failed) echo active; exit 1;;
  esac
done
"#;

/// Every fake tool and its body.
pub const TOOLS: &[(&str, &str)] = &[
    ("relation-get", RELATION_GET),
    ("relation-set", RELATION_SET),
    ("relation-list", RELATION_LIST),
    ("relation-ids", RELATION_IDS),
    ("is-leader", IS_LEADER),
    ("config-get", CONFIG_GET),
    ("status-set", STATUS_SET),
    ("juju-log", JUJU_LOG),
    ("open-port", PORT),
    ("close-port", PORT),
    ("goal-state", GOAL_STATE),
    ("action-get", ACTION_GET),
    ("action-set", ACTION_SET),
    ("action-fail", ACTION_FAIL),
    ("network-get", NETWORK_GET),
    ("unit-get", UNIT_GET),
    ("systemctl", SYSTEMCTL),
];

/// Writes every tool into `dir` as an executable script.
pub fn install(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create tools dir");
    for (name, body) in TOOLS {
        let path = dir.join(name);
        std::fs::write(&path, tool(name, body)).expect("write tool");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod tool");
    }
}
