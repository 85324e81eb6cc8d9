"""Word list for room codes (Appendix C.3).

Hand-picked common, short, lowercase English words: easy to read aloud and to
type, nothing offensive, no duplicates.  ``tests/unit/test_codes.py`` checks
those properties; the entropy of a code follows from ``len(WORDS)``, so the
list may grow but must not shrink below what ``CODE_ENTROPY_BITS`` needs.
"""

from typing import Final

_WORD_TEXT: Final = """
acorn acre album alpha amber anchor ant anthem anvil apple apricot arcade arrow aspen
atlas azure badge bagel ball ballet banana banjo banner barrel basil basket bat bay
beach beacon bean bear bee beige bell bench berry beta bingo birch bird biscuit bison
blanket bloom blossom blue bluff boar boat bold bonus bottle bowl box branch brave bread
breeze brick bridge bright brisk brook broom brush bucket bush butter button cabin cable
cactus cake calm camel camera candle candy canoe canvas canyon cap cargo carnival carpet
carrot cart cashew castle cat cave cedar celery cello chair chalk cheese cherry chess
chili chorus cinema circus citrus clam clever cliff clock cloud clover coast cobalt
cobra cocoa coconut coin colt comet compass cookie coral cord corn cosmic cosmos cotton
cove cozy crab crane cream creek crisp crow crown cup curly curry curtain dance dapper
date dawn deer delta denim desert desk dew dial diner dingo disco dog domino dove dragon
drum duck dune dusk eager eagle early earth easel echo eel elbow elk elm ember emu
engine fable falcon fancy fast feather fence fern festival fiddle field fig finch fish
fjord flag flame flea flora fluffy flute fog forest fork fox frame fresh frog frost
galaxy garden garlic gate gear gecko gentle geyser giant ginger glacier glad glade glen
glitter globe glove goat golden goose grand grape grass gravity green grove guitar gull
gust hammer happy harbor hare harp harvest hat hawk hazel helmet hen heron hill hinge
hobby holly honest honey hook horse humble ibis icy igloo island ivy jam jar jay jazz
jelly jigsaw jolly journey jungle kale kayak keen kernel kettle key kind kite kiwi koala
ladder lagoon lake lamb lamp lantern lark leaf ledger legend lemon lemonade lemur lens
lever lily lime lion lively llama lock lotus lucky lynx lyric magic magnet mango map
maple marble marsh mask meadow mellow melon merry mesa meteor mighty mint mirror mist
misty mitten modest mole moon moose mosaic moss moth motor mountain mouse muffin mule
nectar needle nest net newt nickel noble noodle notebook oak oar oasis oat ocean olive
onion opera orange orbit origami otter owl ox oyster paddle pail palace palm panda
papaya paper parade parrot pasta pastel peach peak peanut pear pebble pencil pepper
photon piano pickle pie pillow pilot pine pipe pixel plain planet plate plaza plum
pocket polite polka pond pony poppy pot potato prairie pretzel prism proud puffin puma
pumpkin puzzle quail quartz quest quick quiet quill quilt rabbit radar radio radish raft
rail rain rainbow raisin rapid raven reef rhythm ribbon rice riddle ridge ring river
robe robin rock rocket rodeo rope rose rosy royal rudder rusty saddle safari sail salad
salmon salsa salt sand satin savanna scarf scout sea seal shadow shark sheep shelf
shield shiny shoe shore shrimp silent silk silver simple sketch sky sled sleek slope
sloth smart smooth snail snow snowy sock soft solar sonic soup spice spiral spoon spring
sprout squid stamp star statue steady stone stool stork storm stream string sturdy sugar
summit sun sunny surf swamp swan swift syrup table taco tango tea temple tennis tent
thimble thistle thorn thunder ticket tide tidy tiger timber tiny toad toast tomato topaz
torch towel tower travel tray treaty trophy trout trumpet tulip tuna tundra tunnel turbo
turkey turtle umbrella valley vanilla vase velvet vine violin viper vivid volcano voyage
waffle wagon wallet walnut walrus warm wave whale wheel whistle willow wind window
winter wise witty wolf wren yacht yak yarn yodel yogurt young zebra zenith zephyr zesty
zipper
"""

WORDS: Final[tuple[str, ...]] = tuple(_WORD_TEXT.split())
