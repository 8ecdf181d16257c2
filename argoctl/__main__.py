from argoctl.cli import main

main()
