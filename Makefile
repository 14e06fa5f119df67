# umvu: `make run` and `make test` do all the set-up on a fresh Debian 12.
PYTHON   ?= /usr/bin/python3
VENV     ?= .venv
CMD      ?=
PYTEST_ARGS ?=
# Debian packages umvu, its tests and its benchmarks need
DEB_PACKAGES = python3-venv python3-dev gcc libc6-dev libffi-dev libseccomp2 libseccomp-dev \
	e2fsprogs fuse2fs fusefat fuseiso squashfuse fuse-zip exfat-fuse \
	dosfstools mtools fdisk squashfs-tools xorriso zip exfatprogs \
	proot fakeroot xvfb xterm x11-utils util-linux procps tar qemu-user-static \
	libvdestack0 libvdeplug2 libvdeplug-slirp vdeplug busybox udhcpc iproute2

.PHONY: run test bench soak deps venv clean check-cpython docs foreign

# the helper commands (vu_insmod, vumount, vusu...) are found inside the view
run: venv
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/umvu $(if $(strip $(CMD)),-- sh -c '$(CMD)')

test: venv
	@$(MAKE) -s foreign
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS) tests

# A foreign static binary for the vubinfmt tests (qemu-user-static runs it):
# Debian's arm64 busybox-static, fetched by apt into build/foreign with
# lists of its own (the machine's apt state and architectures untouched)
FOREIGN = build/foreign/busybox-arm64
FOREIGN_APT = apt-get -q -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 \
	-o Dir::State::Lists=$(abspath build/foreign/lists) -o Dir::Cache::pkgcache= \
	-o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=$$(id -un) -o Debug::NoLocking=1
foreign: $(FOREIGN)
$(FOREIGN):
	@mkdir -p build/foreign/lists/partial
	@echo "fetching Debian's busybox-static:arm64 for the vubinfmt tests"
	$(FOREIGN_APT) update >/dev/null
	cd build/foreign && $(FOREIGN_APT) download busybox-static:arm64 >/dev/null
	dpkg-deb --fsys-tarfile build/foreign/busybox-static_*_arm64.deb | tar -xO ./bin/busybox > $@.tmp
	chmod 755 $@.tmp && mv $@.tmp $@
	rm -rf build/foreign/lists build/foreign/*.deb

# the peer: upstream proot 5.4 with seccomp acceleration, built once into
# build/proot-build (bench/run.py takes it by default); without the
# source, or if the build fails, the bench runs with proot from PATH
PROOT_BUILD = build/proot-build/src/proot
PEERS = ../shared/peers
bench: venv
	@test -x $(PROOT_BUILD) || ! test -x $(PEERS)/build-proot.sh || \
		$(PEERS)/build-proot.sh $(abspath build/proot-build) >/dev/null || \
		echo "warning: proot 5.4 not built; the bench uses proot from PATH"
	$(VENV)/bin/python bench/run.py $(if $(PROOT),--proot $(PROOT))

# 200 processes and 64 threads doing file I/O in a cow mount for 60 s: the
# hypervisor's descriptors and RSS must not grow (run as root: the
# hypervisor is not dumpable, so only root may read its /proc entries)
soak: venv
	$(VENV)/bin/python bench/soak.py

docs: venv
	$(VENV)/bin/python -m umvu.syscall_table > docs/syscalls.md
	$(VENV)/bin/python -m umvu.manpages >/dev/null
	$(VENV)/bin/python docs/make_tutorials.py >/dev/null
	-$(VENV)/bin/python docs/make_screenshot.py >/dev/null

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages:" $$missing; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; }; \
		else \
			echo "umvu needs these Debian packages; please run:"; \
			echo "  sudo apt-get install" $$missing; exit 1; \
		fi; \
	fi

# byte-compiled up front: with PYTHONDONTWRITEBYTECODE set (CI, some
# shells) every umvu start-up would compile the package again
venv: deps $(VENV)/.installed
	@$(VENV)/bin/python -m compileall -q umvu modules
	@$(VENV)/bin/python -m umvu.launcher $(VENV)/bin >/dev/null

$(VENV)/.installed: pyproject.toml setup.py csrc/*.c csrc/*.h csrc/build_core.py
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip setuptools wheel
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info umvu/_core*.so umvu/_core.c umvu/_core.o

# CPython's own tests (test_os, test_posix, test_shutil, test_glob,
# test_tempfile, test_pathlib, test_tarfile) natively and inside umvu with a
# vufs cow mount over TMPDIR, compared test by test; CPYTHON_ARGS="test_os -v"
CPYTHON_ARGS ?=
check-cpython: venv
	@dpkg-query -W -f='$${Status}\n' libpython3.11-testsuite 2>/dev/null | grep -q '^install ok installed' || \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian package: libpython3.11-testsuite"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpython3.11-testsuite >/dev/null || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libpython3.11-testsuite >/dev/null; }; \
	else \
		echo "check-cpython needs: sudo apt-get install libpython3.11-testsuite"; exit 1; \
	fi
	$(VENV)/bin/python bench/check_cpython.py $(CPYTHON_ARGS)
