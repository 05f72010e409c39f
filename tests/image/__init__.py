"""Boot tests of the appliance image (image/): systemd-nspawn boots of its root partition in network
namespaces the tests create, and a qemu TCG smoke boot of the whole disk."""
