#!/usr/bin/env bash
# Throwaway single-host Slurm 22.05 cluster for tests and CI (Debian 12, root, no systemd); installs
# slurmctld slurmd slurm-client munge with apt-get when missing.
# Usage:  source launcher/slurm/ci_cluster.sh; slurm_up [NNODES]; sbatch --wait ...; slurm_down
#   NNODES>1: virtual nodes n1..nN on this host (one slurmd each), added to /etc/hosts so that
#   MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) resolves.
SLURM_CI_DIR=${SLURM_CI_DIR:-$(mktemp -d /tmp/slurm-ci.XXXXXX)}
export SLURM_CONF=$SLURM_CI_DIR/slurm.conf

slurm_install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
    command -v munged >/dev/null && return 0
  local pkgs="slurmctld slurmd slurm-client munge"; export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends $pkgs >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $pkgs >/dev/null; }
}

slurm_up() {
  local n=${1:-1} d=$SLURM_CI_DIR host cpus mem i names=()
  slurm_install || { echo "slurm_install failed" >&2; return 1; }
  host=$(hostname -s); cpus=$(nproc); mem=$(awk '/MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)
  if [ "$n" -eq 1 ]; then names=("$host"); else for i in $(seq 1 "$n"); do names+=("n$i"); done; fi
  mkdir -p "$d"/{state,log,munge}; chmod 755 "$d" "$d/munge"     # munged wants o+x on socket dir
  head -c 1024 /dev/urandom > "$d/munge/key"; chmod 400 "$d/munge/key"
  munged --key-file="$d/munge/key" --socket="$d/munge/sock" --pid-file="$d/munge/munged.pid" \
    --log-file="$d/log/munged.log" --seed-file="$d/munge/seed" || return 1
  cat > "$SLURM_CONF" <<EOF
ClusterName=ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURM_CI_PORT:-6817}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge/sock
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool/%n
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd-%n.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
# sbatch --wait polls 2s,8s,32s... unless MinJobAge<=5; finished jobs vanish from squeue/scontrol after ~5s
MinJobAge=5
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  for i in "${!names[@]}"; do
    echo "NodeName=${names[$i]} NodeHostname=$host NodeAddr=127.0.0.1 Port=$((${SLURM_CI_PORT:-6817}+1+i)) CPUs=$cpus RealMemory=$mem State=UNKNOWN" >> "$SLURM_CONF"
    mkdir -p "$d/spool/${names[$i]}"
  done
  [ "$n" -gt 1 ] && echo "127.0.0.1 ${names[*]} # slurm-ci $d" >> /etc/hosts
  slurmctld -f "$SLURM_CONF" || return 1                 # both daemonize and write their pid files
  for i in "${names[@]}"; do slurmd -f "$SLURM_CONF" -N "$i" || return 1; done
  for i in $(seq 1 60); do
    [ "$(sinfo -h -o %T 2>/dev/null | sort -u)" = idle ] && { echo "slurm up: ${names[*]} (SLURM_CONF=$SLURM_CONF)"; return 0; }
    sleep 0.5
  done
  echo "slurm did not become idle:" >&2; sinfo >&2; tail -n 20 "$d"/log/*.log >&2; return 1
}

slurm_down() {   # cancels our jobs, then SIGTERMs exactly the PIDs from our pid files
  local d=$SLURM_CI_DIR p f alive pids=()
  squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null
  for _ in $(seq 1 50); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.2; done
  for f in "$d"/slurmd-*.pid "$d/slurmctld.pid" "$d/munge/munged.pid"; do [ -s "$f" ] && pids+=("$(cat "$f")"); done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do
    alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.1
  done
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && kill -9 "$p"; done
  if grep -q "# slurm-ci $d\$" /etc/hosts; then grep -v "# slurm-ci $d\$" /etc/hosts > "$d/hosts"; cat "$d/hosts" > /etc/hosts; fi
  [ -n "${SLURM_CI_KEEP:-}" ] || rm -rf "$d"
}
