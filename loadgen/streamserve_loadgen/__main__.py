from streamserve_loadgen.commands.cli import main

main()
