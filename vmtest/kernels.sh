# kernels.sh: the kernel matrix, fetched from Debian's archive with apt.
# Sourced by vmtest.sh and run-matrix.sh; `bash kernels.sh` lists the kernels.
#
# Each kernel is the newest package matching a pattern in a Debian suite
# or its security updates (where bookworm's 6.12 is).
# Packages are fetched with `apt-get download` through an apt
# configuration of this script's own (its sources, lists and
# architecture), never the machine's: the machine's apt sources only tell
# which mirror to use (or VMTEST_MIRROR). Packages and what is extracted
# from them are cached in VMTEST_CACHE.

: "${VMTEST_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/xdpflow-vmtest}"

# name suite arch package-pattern tier (tier.sh): 5.10 is below the
# floor, arm64 runs emulated on an x86 host and gets the smaller tier.
KERNELS="
5.10 bullseye amd64 ^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$ floor
6.1 bookworm amd64 ^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$ full
6.12 bookworm amd64 ^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$ full
6.1-arm64 bookworm arm64 ^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$ small
"

vm_die() {
	echo "vmtest: $*" >&2
	exit 1
}

host_arch() {
	case "$(uname -m)" in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	*) uname -m ;;
	esac
}

# debian_mirror [security] prints the Debian archive (or its security
# archive) that the machine's apt sources use.
debian_mirror() {
	local want='/debian/?$' override="${VMTEST_MIRROR:-}"
	if [ "${1:-}" = security ]; then
		want='/debian-security/?$' override="${VMTEST_SECURITY_MIRROR:-}"
	fi
	if [ -n "$override" ]; then
		echo "$override"
		return
	fi
	local uri
	uri="$({
		cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}'
		cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
	} | grep -E "$want" | head -1 || true)"
	[ -n "$uri" ] || vm_die "no Debian archive matching $want in /etc/apt/sources*: set VMTEST_MIRROR and VMTEST_SECURITY_MIRROR"
	echo "${uri%/}"
}

# apt_private SUITE ARCH runs `apt-get update` for an apt configuration of
# its own and sets APT_OPTS to use it.
apt_private() {
	local suite="$1" arch="$2" d="$VMTEST_CACHE/apt/$1-$2"
	mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
	local opts="[arch=$arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
	{
		echo "deb $opts $(debian_mirror) $suite main"
		echo "deb $opts $(debian_mirror security) $suite-security main"
	} >"$d/sources.list"
	: >>"$d/status"
	APT_OPTS=(-o "Dir::Etc::SourceList=$d/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
		-o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status" -o "Dir::Cache=$d/cache"
		-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch" -o Debug::NoLocking=1
		-o APT::Sandbox::User=root)
	apt-get "${APT_OPTS[@]}" -qq update >"$d/update.log" 2>&1 || {
		cat "$d/update.log" >&2
		return 1
	}
}

# apt_fetch SUITE ARCH PATTERN DIR downloads the newest package whose name
# matches PATTERN into DIR (unless DIR holds it) and prints its file name.
# A package the lists name but the archive no longer serves is passed over
# for the next one.
apt_fetch() {
	local suite="$1" arch="$2" pattern="$3" dir="$4" names name
	apt_private "$suite" "$arch" || return 1
	names="$(apt-cache "${APT_OPTS[@]}" search --names-only "$pattern" | awk '{print $1}' | sort -rV | head -5)"
	[ -n "$names" ] || {
		echo "vmtest: no package matching $pattern in $suite ($arch)" >&2
		return 1
	}
	mkdir -p "$dir"
	local cached
	for name in $names; do
		cached="$(ls "$dir/${name}_"*"_$arch.deb" 2>/dev/null | sort -V | tail -1)"
		if [ -n "$cached" ]; then
			echo "$cached"
			return 0
		fi
		if (cd "$dir" && apt-get "${APT_OPTS[@]}" -qq download "$name:$arch" >/dev/null 2>"$dir/download.log"); then
			ls "$dir/${name}_"*"_$arch.deb" | sort -V | tail -1
			return 0
		fi
		echo "vmtest: $name: $(tail -1 "$dir/download.log")" >&2
	done
	return 1
}

# busybox_for ARCH prints a static busybox for ARCH: the machine's own
# (busybox-static) for its architecture, else Debian's busybox-static.
busybox_for() {
	local arch="$1"
	if [ "$arch" = "$(host_arch)" ]; then
		local bb
		bb="$(command -v busybox || true)"
		[ -n "$bb" ] && ! ldd "$bb" >/dev/null 2>&1 ||
			vm_die "needs a static busybox: apt-get install busybox-static"
		echo "$bb"
		return
	fi
	local d="$VMTEST_CACHE/busybox-$arch"
	if [ ! -x "$d/bin/busybox" ]; then
		local deb
		deb="$(apt_fetch bookworm "$arch" '^busybox-static$' "$VMTEST_CACHE/debs")" ||
			vm_die "could not fetch busybox-static for $arch"
		mkdir -p "$d" && dpkg-deb -x "$deb" "$d"
	fi
	echo "$d/bin/busybox"
}

# kernel_entry NAME prints NAME's line of the matrix (name suite arch
# pattern tier); host, the kernel of this machine, runs the full tier.
# An unknown name fails, saying which names there are.
kernel_entry() {
	if [ "$1" = host ]; then
		echo "host - $(host_arch) - full"
		return
	fi
	local line
	line="$(echo "$KERNELS" | awk -v n="$1" '$1 == n')"
	[ -n "$line" ] || vm_die "unknown kernel '$1'; the matrix has: host $(kernel_names)"
	echo "$line"
}

# kernel_fetch NAME fetches (or finds in the cache) kernel NAME and sets
# KDIR (vmlinuz, config, modules/ flat with modules.dep, busybox), KARCH
# and KVERSION.
kernel_fetch() {
	local name="$1" line suite pattern deb
	line="$(kernel_entry "$name")" || exit 1
	read -r _ suite KARCH pattern _ <<<"$line"
	if deb="$(apt_fetch "$suite" "$KARCH" "$pattern" "$VMTEST_CACHE/debs")"; then
		:
	else
		deb="$(ls "$VMTEST_CACHE/debs/"*"_$KARCH.deb" 2>/dev/null |
			while read -r f; do
				b="$(basename "$f")"
				echo "${b%%_*}" | grep -qE "$pattern" && echo "$f"
			done | sort -V | tail -1)"
		[ -n "$deb" ] || vm_die "could not download kernel $name ($pattern from $suite, $KARCH) and none is cached in $VMTEST_CACHE/debs"
		echo "vmtest: apt failed; using the cached $(basename "$deb")" >&2
	fi
	KDIR="$VMTEST_CACHE/kernels/$(basename "$deb" .deb)"
	if [ ! -f "$KDIR/ready" ]; then
		rm -rf "$KDIR" && mkdir -p "$KDIR/modules"
		local x="$KDIR/extract"
		dpkg-deb -x "$deb" "$x"
		cp "$x"/boot/vmlinuz-* "$KDIR/vmlinuz"
		cp "$x"/boot/config-* "$KDIR/config"
		basename "$(ls -d "$x"/lib/modules/*)" >"$KDIR/version"
		kernel_flatten_modules "$x/lib/modules/$(cat "$KDIR/version")" "$KDIR/modules"
		rm -rf "$x"
		touch "$KDIR/ready"
	fi
	cp "$(busybox_for "$KARCH")" "$KDIR/busybox"
	KVERSION="$(cat "$KDIR/version")"
}

# kernel_flatten_modules SRC DST copies the network modules the tests may
# load from SRC (a /lib/modules/VERSION) into DST by base name,
# decompressed, with a modules.dep in those names made from each module's
# "depends=" (a package has no modules.dep: depmod makes it on install).
kernel_flatten_modules() {
	local src="$1" dst="$2" f ko
	find "$src/kernel/net" "$src/kernel/drivers/net" "$src/kernel/lib" -name '*.ko*' 2>/dev/null |
		while read -r f; do
			ko="$(basename "$f")"
			ko="${ko%.xz}" && ko="${ko%.zst}"
			case "$f" in
			*.ko.xz) xz -dc "$f" >"$dst/$ko" ;;
			*.ko.zst) zstd -qdc "$f" >"$dst/$ko" ;;
			*) cp "$f" "$dst/$ko" ;;
			esac
			printf '%s:' "$ko"
			tr '\0' '\n' <"$dst/$ko" | sed -n 's/^depends=//p' | head -1 | tr ',' '\n' |
				while read -r d; do [ -z "$d" ] || printf ' %s.ko' "$d"; done
			echo
		done >"$dst/modules.dep"
}

# modules_for KDIR MODULE... prints the module files to insmod, in order,
# for the modules that KDIR's kernel builds as modules (built-in ones and
# ones it lacks are left out).
modules_for() {
	local kdir="$1"
	shift
	local -A seen=()
	_mod_visit() {
		local f="$1.ko" deps
		[ -n "${seen[$f]:-}" ] && return
		seen[$f]=1
		deps="$(awk -v f="$f:" '$1 == f {for (i = 2; i <= NF; i++) print $i}' "$kdir/modules/modules.dep")"
		local d
		for d in $deps; do
			_mod_visit "${d%.ko}"
		done
		[ -f "$kdir/modules/$f" ] && echo "$f"
		return 0
	}
	local m
	for m in "$@"; do
		_mod_visit "$m"
	done
}

kernel_names() {
	echo "$KERNELS" | awk 'NF {printf "%s ", $1}'
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	kernel_names
	echo
fi
