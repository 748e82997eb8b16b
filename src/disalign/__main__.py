from disalign.cli.main import main

main()
