# Two commands matter: `make run` starts the system on embedded defaults, `make test` checks it.
# Both bootstrap what they need on a fresh Debian machine (as root), idempotently.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the tests and `make run` need (kubectl comes from PyPI, Debian's is too old).
DEBS   := python3-venv openssl ca-certificates containerd runc containernetworking-plugins busybox-static iptables iproute2 nftables debootstrap systemd-container openssh-client

.PHONY: all run test lint typecheck unit bench clean deps venv image image-deps

all: venv

deps:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# mypy cannot follow setuptools' editable finder for the services/ -> kubeedge mapping;
	@# a symlinked source root on a .pth gives both the interpreter and mypy a real path.
	@mkdir -p $(VENV)/src && ln -sfn ../../services $(VENV)/src/kubeedge && ln -sfn ../../edgemesh $(VENV)/src/edgemesh
	@echo "$(CURDIR)/$(VENV)/src" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_kubeedge_src.pth
	@touch $@

lint: venv
	$(VENV)/bin/ruff check services edgemesh tests bench
	$(VENV)/bin/ruff format --check services edgemesh tests bench

typecheck: venv
	$(VENV)/bin/mypy -p kubeedge -p edgemesh

unit: venv
	$(PY) -m pytest -q tests/unit

test: venv lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

# cloudcore (embedded API + controllers, state .run/cloud) and this machine joined as an edge node
# (edgecore, state .run/edge); Ctrl-C stops edgecore, then cloudcore.
run: venv
	@mkdir -p .run
	$(PY) -m kubeedge.keadm dev-run --data-dir .run

bench: venv
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf .run build *.egg-info

# The appliance (image/, DESIGN §8): a raw UEFI disk (systemd-boot; dd or bmaptool it onto a device)
# and the same system as a directory tree for containers. IMAGE_PROFILE=cloud builds the cloud node.
# mkosi 25 is unpacked from Debian trixie into image/.tools (bookworm's 14 cannot make ESP disks here).
IMAGE_PROFILE ?= edge
# IMAGE_SSH=yes adds openssh-server (keys from kubeedge/authorized_keys on the ESP) to either profile.
IMAGE_SSH     ?= no
IMAGE_FLAGS   := --profile $(IMAGE_PROFILE) $(if $(filter yes,$(IMAGE_SSH)),--profile ssh)
IMAGE_NAME    := kubeedge-$(IMAGE_PROFILE)$(if $(filter yes,$(IMAGE_SSH)),-ssh)
IMAGE_OUT     := image/mkosi.output
IMAGE_DEBS    := systemd-container qemu-system-x86 ovmf fdisk bmap-tools debian-archive-keyring
MKOSI         := PYTHONPATH=$(CURDIR)/image/.tools/mkosi/usr/lib/python3/dist-packages python3 -m mkosi

image-deps:
	@missing=""; for p in $(IMAGE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	image/fetch-mkosi.sh

image: venv image-deps
	@# A stale setuptools build/ dir would leak old files into the wheel.
	rm -rf build image/.wheels
	$(PY) -m pip wheel -q --disable-pip-version-check --wheel-dir image/.wheels .
	cd image && $(MKOSI) $(IMAGE_FLAGS) --output $(IMAGE_NAME) -f build
	@# Same output directory: the tools tree mkosi built there is reused, not built again.
	cd image && $(MKOSI) $(IMAGE_FLAGS) --format directory --bootable no \
	  --output $(IMAGE_NAME)-tree -f build
	bmaptool -q create -o $(IMAGE_OUT)/$(IMAGE_NAME).bmap $(IMAGE_OUT)/$(IMAGE_NAME).raw
	@ls -lhs $(IMAGE_OUT)/$(IMAGE_NAME).raw; echo "tree: $(IMAGE_OUT)/$(IMAGE_NAME)-tree"

# The project and every dependency as wheels in dist/wheels: what the Ansible roles install on hosts
# that have no package index (ansible/: kubeedge_wheel_dir).
.PHONY: wheel
wheel: venv
	rm -rf dist/wheels
	$(PY) -m pip wheel -q --disable-pip-version-check --wheel-dir dist/wheels .
