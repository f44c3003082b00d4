from modeldepot.cli import main

main()
