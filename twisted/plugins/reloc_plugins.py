from twisted.application.service import ServiceMaker

relocfs = ServiceMaker(
    "reloc file server",
    "reloc.fstap",
    "Serve files over the reloc protocol.",
    "relocfs",
)
relocproxy = ServiceMaker(
    "reloc proxy",
    "reloc.proxytap",
    "Relay reloc streams and move them between backends on SIGHUP.",
    "relocproxy",
)
