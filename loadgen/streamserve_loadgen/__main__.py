from streamserve_loadgen.cli import main

main()
