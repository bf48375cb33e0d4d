# Sourced by the scripts in benches/: install from Debian's packages what a benchmark needs
# and the machine lacks (through sudo unless root), saying so on stderr.
#   debian_install "what, and what for" PACKAGE...
debian_install() {
	local what=$1 sudo=""
	shift
	echo "installing $what (Debian packages: $*)..." >&2
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}
