from hubertkit.cli import main

main()
