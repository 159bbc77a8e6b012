#!/usr/bin/env bash
# docs/raspberry-pi.md, executed: a Debian bookworm arm64 root (what Raspberry Pi OS 64-bit is built on), run
# under qemu-user emulation on an x86-64 Debian host, follows the guide's install steps as written, then
# captions the demo frames and video and compares every caption with the x86-64 run's, token for token.
#
#   sudo benchmarks/pi_emulated.sh            # or: make pi-check
#
# Needs root (debootstrap, chroot, mounts), the host's Debian package archive and PyPI. Not run in CI: the first
# run builds a root filesystem and installs the edge extra under emulation (wall time is printed at the end).
# Timing under emulation means nothing for a Pi: none is reported. What only a real Pi can show (camera, audio
# device, speed, thermal throttling) is listed in the guide.
#
# Environment: PI_ROOT (default .pi-root/ in the clone, reused between runs), PI_REPORT (reports/pi-emulated).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${PI_ROOT:-$REPO/.pi-root}
REPORT=${PI_REPORT:-$REPO/reports/pi-emulated}
START=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
die() { printf 'pi_emulated: %s\n' "$*" >&2; exit 1; }
# The emulated CPU: a Pi 4's Cortex-A72 unless PI_CPU says otherwise (cortex-a76 is a Pi 5's). Not qemu's
# default 'max' CPU: it advertises SVE/SME, which no Pi has, and with it LiteRT's XNNPACK kernels gave one and
# the same caption for every picture (measured: a qemu or kernel-selection artefact, not a Pi result).
PI_CPU=${PI_CPU:-cortex-a72}
in_pi() { chroot "$ROOT" /usr/bin/env -i QEMU_CPU="$PI_CPU" HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8 "$@"; }
as_pi() { in_pi runuser -u pi -- env HOME=/home/pi "$@"; }  # the login user of the guide ($USER)

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it): sudo $0"
[ "$(uname -m)" = x86_64 ] || die "meant for an x86-64 host; on an arm64 machine follow docs/raspberry-pi.md directly"
mkdir -p "$REPORT"

step "host tools: debootstrap, qemu-user-static, binfmt-support (Debian packages)"
need=()
for pkg in debootstrap qemu-user-static binfmt-support; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# arm64 programs run through qemu via binfmt_misc; the F flag lets them run inside the chroot as well.
[ -e /proc/sys/fs/binfmt_misc/status ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
  || die "binfmt_misc cannot be mounted here, so arm64 programs cannot run inside a chroot"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 \
  || die "qemu-aarch64 is not registered with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"

# Everything mounted under the root, deepest first. A run that was killed (not stopped: its EXIT trap never ran)
# leaves /proc, /sys and /dev bound inside; removing the root then would walk into the host's own.
mounts_under_root() { findmnt -rn -o TARGET | awk -v r="$ROOT/" 'index($0, r) == 1' | sort -ru; }
release_mounts() { mounts_under_root | while read -r m; do umount -l "$m" 2>/dev/null || true; done; }
release_mounts
[ -z "$(mounts_under_root)" ] || die "cannot unmount what an earlier run left under $ROOT: $(mounts_under_root | head -1)"

step "arm64 root filesystem: Debian bookworm in $ROOT"
if [ ! -e "$ROOT/.scenecap-root-done" ]; then
  rm -rf --one-file-system "$ROOT"
  # What Raspberry Pi OS Lite already has; the guide's own apt line runs below.
  debootstrap --arch arm64 --variant=minbase --include=python3,ca-certificates,passwd,sudo,procps \
    bookworm "$ROOT" >"$REPORT/debootstrap.log" 2>&1 || die "debootstrap failed: see $REPORT/debootstrap.log"
  touch "$ROOT/.scenecap-root-done"
fi
trap release_mounts EXIT
for m in proc sys dev; do mount --rbind "/$m" "$ROOT/$m"; mount --make-rslave "$ROOT/$m"; done
# qemu-user passes the host's x86 /proc/cpuinfo through, on which LiteRT's CPU detection crashes (SIGSEGV); the
# emulated Pi sees what a Raspberry Pi 4 (4 x Cortex-A72, NEON) shows instead.
CPUINFO="$ROOT/.pi4-cpuinfo"
for i in 0 1 2 3; do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n' "$i"
  printf 'CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done >"$CPUINFO"
printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n' >>"$CPUINFO"
mount --bind "$CPUINFO" "$ROOT/proc/cpuinfo"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# sudo resets the environment; under emulation it must keep QEMU_CPU (see PI_CPU), or qemu falls back to 'max'.
echo 'Defaults env_keep += "QEMU_CPU"' >"$ROOT/etc/sudoers.d/qemu-cpu" && chmod 0440 "$ROOT/etc/sudoers.d/qemu-cpu"
grep -q "$(hostname)" "$ROOT/etc/hosts" 2>/dev/null || echo "127.0.1.1 $(hostname)" >>"$ROOT/etc/hosts"  # for sudo
# A host behind a TLS-inspecting proxy trusts a local CA; the emulated Pi must trust it too to reach PyPI.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  in_pi update-ca-certificates >/dev/null 2>&1 || true
fi
in_pi uname -m | grep -qx aarch64 || die "the chroot does not run arm64 programs"
in_pi python3 --version

step "the guide's section 1: apt install python3-venv espeak-ng alsa-utils"
in_pi apt-get update -qq >/dev/null
# (sudo and procps come with Raspberry Pi OS Lite; a root made by an older run of this script may lack them.)
in_pi env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv espeak-ng alsa-utils sudo procps >/dev/null
in_pi espeak-ng --version

step "picamera2 from the OS archive (the guide: apt install python3-picamera2)"
if in_pi apt-cache show python3-picamera2 >/dev/null 2>&1; then
  in_pi env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-picamera2 >/dev/null
  PICAMERA2=yes
else
  PICAMERA2=no
  echo "python3-picamera2 is not in Debian's arm64 archive (it comes from Raspberry Pi OS's own); not checked"
fi

step "the guide's section 2, as written (login user pi, scenecap system user, venv in /opt/scenecap)"
in_pi id pi >/dev/null 2>&1 || in_pi useradd --create-home --shell /bin/bash pi
for g in video render audio plugdev; do in_pi getent group "$g" >/dev/null || in_pi groupadd --system "$g"; done
in_pi id scenecap >/dev/null 2>&1 || in_pi useradd --system --home-dir /opt/scenecap --create-home \
  --shell /usr/sbin/nologin --groups video,render,audio,plugdev scenecap
in_pi chown pi /opt/scenecap
# A re-run starts where section 2 does (an earlier run ended after section 4's chown -R scenecap).
[ -d "$ROOT/opt/scenecap/venv" ] && in_pi chown -R pi /opt/scenecap/venv
rm -rf "$ROOT/home/pi/scenecap"
mkdir -p "$ROOT/home/pi/scenecap"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/home/pi/scenecap"  # "copy the scenecap source to the Pi"
in_pi chown -R pi:pi /home/pi/scenecap
if [ ! -x "$ROOT/opt/scenecap/venv/bin/python" ]; then
  as_pi python3 -m venv --system-site-packages /opt/scenecap/venv
fi
as_pi /opt/scenecap/venv/bin/pip install --quiet --disable-pip-version-check \
  "/home/pi/scenecap[edge]" "numpy<2" "opencv-python-headless<4.12"
imports="import cv2, numpy, ai_edge_litert; print('ok', 'numpy', numpy.__version__, 'cv2', cv2.__version__)"
[ "$PICAMERA2" = yes ] && imports="import picamera2; $imports"
as_pi /opt/scenecap/venv/bin/python -c "$imports"
if as_pi /opt/scenecap/venv/bin/python -c "import tensorflow" 2>/dev/null; then die "TensorFlow got into the venv"; fi
echo "no TensorFlow: good"
VENV_SIZE=$(du -sh "$ROOT/opt/scenecap/venv" | cut -f1)
echo "venv size: $VENV_SIZE"
as_pi /opt/scenecap/venv/bin/pip list --format=freeze >"$REPORT/pip-freeze.txt"

step "the bundle and the demo media"
rm -rf "$ROOT/opt/scenecap/bundle" "$ROOT/opt/scenecap/demo"
cp -r "$REPO/demo/bundle" "$ROOT/opt/scenecap/bundle"
mkdir -p "$ROOT/opt/scenecap/demo" && cp -r "$REPO/demo/frames" "$REPO/demo/video" "$ROOT/opt/scenecap/demo/"
in_pi chown -R pi:pi /opt/scenecap/bundle /opt/scenecap/demo
as_pi /opt/scenecap/venv/bin/scenecap inspect /opt/scenecap/bundle >"$REPORT/inspect-arm64.txt"
head -5 "$REPORT/inspect-arm64.txt"

step "captions on arm64 (Cortex-A72 as a Pi 4, Cortex-A76 as a Pi 5) and on this x86-64 host, with LiteRT's default kernels (XNNPACK) and its builtin ones"
HOST_PY="$REPO/.venv-edge/bin/scenecap"
[ -x "$HOST_PY" ] || HOST_PY="$REPO/.venv/bin/scenecap"
[ -x "$HOST_PY" ] || die "no host venv: run 'make demo' first (it builds .venv-edge)"
for kernels in default builtin; do
  (cd "$REPO/demo" && SCENECAP_KERNELS=$kernels "$HOST_PY" caption frames video --bundle bundle --every 2 \
     2>/dev/null | sed 's#^#demo/#' >"$REPORT/captions-x86_64-$kernels.tsv")
  for cpu in cortex-a72 cortex-a76; do
    PI_CPU=$cpu as_pi env SCENECAP_KERNELS=$kernels sh -c \
      "cd /opt/scenecap && venv/bin/scenecap caption demo/frames demo/video --bundle bundle --every 2" 2>/dev/null \
      >"$REPORT/captions-$cpu-$kernels.tsv"
  done
done
python3 - "$REPORT" <<'EOF'
import sys
from pathlib import Path

report = Path(sys.argv[1])


def read(name: str) -> dict[str, str]:
    return dict(line.split("\t", 1) for line in (report / f"captions-{name}.tsv").read_text().splitlines())


lines = ["| kernels | frame | x86-64 | arm64 Cortex-A72 (Pi 4) | arm64 Cortex-A76 (Pi 5) |", "|---|---|---|---|---|"]
for kernels in ("default", "builtin"):
    x86 = read(f"x86_64-{kernels}")
    arms = {cpu: read(f"{cpu}-{kernels}") for cpu in ("cortex-a72", "cortex-a76")}
    for cpu, arm in arms.items():
        same = sum(x86.get(k) == v for k, v in arm.items())
        print(f"{kernels} kernels, {cpu}: {same} of {len(x86)} captions identical token for token to x86-64's "
              f"({len(arm)} captioned)")
    for frame in sorted(x86):
        cells = [arm.get(frame, "(none)") for arm in arms.values()]
        cells = ["same" if c == x86[frame] else f"**{c}**" for c in cells]
        lines.append(f"| {kernels} | {frame} | {x86[frame]} | {cells[0]} | {cells[1]} |")
(report / "captions.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

step "speech: scenecap caption --speak --speak-to DIR (espeak-ng from Debian's arm64 archive)"
rm -rf "$ROOT/tmp/speech" && as_pi mkdir -p /tmp/speech
as_pi sh -c "cd /opt/scenecap && venv/bin/scenecap caption demo/frames/scene_1.jpg demo/frames/scene_2.jpg \
  --bundle bundle --speak --speak-to /tmp/speech" >/dev/null
ls -l "$ROOT/tmp/speech"
n_wav=$(find "$ROOT/tmp/speech" -name '*.wav' -size +1k | wc -l)
[ "$n_wav" -ge 2 ] || die "expected 2 spoken captions in /tmp/speech, found $n_wav"

step "section 4: the shipped unit's ExecStart, as the unit's user, after the guide's chown"
UNIT=$(as_pi /opt/scenecap/venv/bin/python -c \
  "import scenecap.edge, pathlib; print(pathlib.Path(scenecap.edge.__file__).with_name('scenecap.service'))")
EXEC=$(in_pi sed -n 's/^ExecStart=//p' "$UNIT")
UNIT_USER=$(in_pi sed -n 's/^User=//p' "$UNIT")
echo "ExecStart=$EXEC (User=$UNIT_USER)"
in_pi chown -R scenecap:scenecap /opt/scenecap
set +e
in_pi runuser -u "$UNIT_USER" -- sh -c "cd /opt/scenecap && timeout 120 $EXEC" >"$REPORT/unit-stdout.txt" \
  2>"$REPORT/unit-stderr.txt"
unit_rc=$?
set -e
echo "exit status $unit_rc (no camera under emulation); what it said:"
cat "$REPORT/unit-stderr.txt"
# The same command on the demo video instead of the camera: the rest of the line works as that user.
VIDEO_EXEC=${EXEC/--source picam/--source /opt/scenecap/demo/video/walk.mp4}
VIDEO_EXEC=${VIDEO_EXEC/--speak /--speak --speak-to /tmp/unit-speech }
in_pi runuser -u "$UNIT_USER" -- sh -c "mkdir -p /tmp/unit-speech && cd /opt/scenecap && timeout 300 $VIDEO_EXEC" \
  >"$REPORT/unit-video-stdout.txt" 2>"$REPORT/unit-video-stderr.txt" || die "the unit's command on a video failed"
tail -1 "$REPORT/unit-video-stderr.txt"
step "updating the deployed cane, as the guide's 'Updating' section says (sudo as the login user)"
as_pi sh -c "rm -rf /tmp/wheels && /opt/scenecap/venv/bin/pip wheel --quiet --no-deps -w /tmp/wheels /home/pi/scenecap"
in_pi sudo -u scenecap sh -c "/opt/scenecap/venv/bin/pip install --quiet --no-deps --force-reinstall /tmp/wheels/scenecap-*.whl"
in_pi sh -c "rm -rf /opt/scenecap/bundle.new /opt/scenecap/bundle.old && \
  install -d -o scenecap -g scenecap /opt/scenecap/bundle.new && cp -r /opt/scenecap/bundle/. /opt/scenecap/bundle.new/ && \
  chown -R scenecap:scenecap /opt/scenecap/bundle.new && \
  sudo -u scenecap /opt/scenecap/venv/bin/scenecap inspect /opt/scenecap/bundle.new >/dev/null && \
  mv /opt/scenecap/bundle /opt/scenecap/bundle.old && mv /opt/scenecap/bundle.new /opt/scenecap/bundle"
in_pi sudo -u scenecap sh -c "cd /opt/scenecap && venv/bin/scenecap caption demo/frames/scene_1.jpg --bundle bundle" \
  2>/dev/null | tee "$REPORT/after-update.tsv"
[ -s "$REPORT/after-update.tsv" ] || die "the updated cane did not caption"
grep -qxF "$(head -1 "$REPORT/after-update.tsv")" "$REPORT/captions-x86_64-default.tsv" \
  || die "after the update, scene_1's caption differs from the x86-64 one"
in_pi chown -R pi:pi /opt/scenecap  # back, so the next run's install steps run as written

WALL=$(( $(date +%s) - START ))
{
  echo "# The Raspberry Pi guide on emulated arm64 ($(date -u +%F))"
  echo
  echo "- root: Debian bookworm arm64, $(in_pi python3 --version), under qemu-user"
  echo "- venv: $VENV_SIZE, no TensorFlow; numpy/cv2/LiteRT: $(grep -iE '^(numpy|opencv-python-headless|ai-edge-litert)==' "$REPORT/pip-freeze.txt" | tr '\n' ' ')"
  echo "- python3-picamera2 in the archive: $PICAMERA2"
  echo "- unit ExecStart as $UNIT_USER: exit $unit_rc with the camera absent: $(head -c 300 "$REPORT/unit-stderr.txt" | tail -1)"
  echo "- wall time: ${WALL} s"
  echo
  cat "$REPORT/captions.md"
} >"$REPORT/summary.md"
step "done in ${WALL} s: $REPORT/summary.md"
