from spinlet.cli.main import main

main()
